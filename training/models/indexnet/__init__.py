"""The IndexNet family (``model.family: indexnet``): the network of Lu et al. (ICCV 2019).

Modules, top to bottom: ``mobilenetv2`` (the stride-1 encoder), ``index_blocks`` (learned
indices), ``decoder`` (ASPP, index-guided decoder, head), ``network`` (``IndexNet``), ``input``
(``make_input``), ``loss`` (``matting_loss``), ``weights`` (the official release and ImageNet
MobileNetV2 files) and ``family`` (``FAMILY``, the registry entry, with the optimiser policy:
a pretrained encoder group and the rest).
"""
