"""Model families: the registry, its types and front doors, and one subpackage per family.

- ``family``: ``ModelFamily`` (one registry entry: build, parameter groups, input, loss,
  padding, importers, export) and ``ParamGroup``.
- ``registry``: ``FAMILIES`` keyed by ``model.family``; ``get_family``, ``family_of``.
- ``build``: ``build_model``, ``import_official``, ``load_backbone``, ``import_folder``,
  ``parameter_groups``, ``describe``, ``count_parameters``.
- ``weights``: reading weight files safely (``read_weights``), ``LoadReport``, ``load_strict``.
- ``imagenet``: ImageNet's RGB statistics.
- ``indexnet/``, ``vitmatte/``: each family's network, input, loss, optimiser policy, weight
  importers and its ``FAMILY`` entry.

A third family is a new subpackage defining ``FAMILY`` and one line in ``registry.FAMILIES``.
"""
