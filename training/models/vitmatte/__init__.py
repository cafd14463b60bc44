"""The ViTMatte family (``model.family: vitmatte``): transformers' network and the official glue.

Modules: ``network`` (``VitMatte``, its transformers config), ``input`` (``make_input``),
``loss`` (``vitmatte_loss``), ``optim`` (layer-wise decay, ``param_groups``), ``weights``
(``load_vit_backbone``, ``import_hf``), ``export`` (``exportable``) and ``family`` (``FAMILY``,
the registry entry).
"""
