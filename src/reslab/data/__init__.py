"""DataModules: CIFAR-10/100."""

from reslab.data.cifar import CIFARDataModule

__all__ = ["CIFARDataModule"]
