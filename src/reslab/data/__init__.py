"""DataModules: CIFAR-10/100, and ImageNet or any ImageFolder dataset."""

from reslab.data.augmentation import Augmentation
from reslab.data.base import ClassificationDataModule
from reslab.data.cifar import CIFARDataModule
from reslab.data.imagefolder import ImageFolderDataModule

__all__ = ["Augmentation", "CIFARDataModule", "ClassificationDataModule", "ImageFolderDataModule"]
