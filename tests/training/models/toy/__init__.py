"""A toy third model family, laid out as a subpackage of ``training.models`` is."""
