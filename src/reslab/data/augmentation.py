"""The augmentation node (`configs/augmentation/`): the numbers a DataModule builds its own
transforms from, and the extra per-image transforms of a recipe. A class, so its options are
checked like every node's (`reslab.checks.schema`): a misspelled key is refused, not ignored."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import Field


@dataclass(frozen=True)
class Augmentation:
    """`pad`/`flip`: the paper's CIFAR zero-pad-crop and horizontal flip probability (both CIFAR
    pipelines read them). `size`/`resize`: photos' training and centre-crop size and the shorter
    side resized to before the evaluation crop. `mixup_alpha`/`cutmix_alpha`: MixUp or CutMix on
    each training batch (0: off). `train`: per-image transforms after the dataset's own."""

    pad: Annotated[int, Field(ge=0)] = 0
    flip: Annotated[float, Field(ge=0, le=1)] = 0.0
    size: Annotated[int, Field(ge=1)] | None = None
    resize: Annotated[int, Field(ge=1)] | None = None
    mixup_alpha: Annotated[float, Field(ge=0)] = 0.0
    cutmix_alpha: Annotated[float, Field(ge=0)] = 0.0
    train: Sequence[Any] = ()

    @property
    def per_batch_only(self) -> bool:
        """Whether pad-crop-flip is all it asks for (what the CIFAR device pipeline runs)."""
        return not (self.train or self.size or self.mixup_alpha or self.cutmix_alpha)
