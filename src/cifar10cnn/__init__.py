"""cifar10cnn: train, understand and use convolutional image classifiers on CIFAR-10."""

__version__ = "0.1.0"
