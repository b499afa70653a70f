"""The engine protocol: a batch of preprocessed images in, class probability maps out."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class Engine(Protocol):
    """What every engine provides.

    ``predict`` takes a float32 batch ``[B, C, H, W]`` (C = number of focal images the model
    takes, already normalized) on any device and returns probabilities ``[B, K, H, W]`` on
    ``device``. Channel 0 is the background class; channels ``1..K-1`` are the column classes
    named by ``class_names`` (so ``len(class_names) == K - 1``).
    """

    name: str
    device: torch.device
    n_inputs: int
    class_names: tuple[str, ...]
    sampling: float | None  # Å/px the model was trained at; None: any sampling

    def predict(self, batch: torch.Tensor) -> torch.Tensor: ...


def model_fields(model, card) -> tuple[int, tuple[str, ...], float | None]:
    """``(n_inputs, class_names, sampling)`` of a network and its model card, checked against each other.

    Raises
    ------
    ModelError
        When the card lacks ``inputs`` or ``class_names``, or they do not fit the network.
    """
    from ..errors import ModelError

    for key in ("inputs", "class_names"):
        if key not in card:
            raise ModelError(f"the model card lacks {key!r}.")
    n_inputs = len(card["inputs"])
    class_names = tuple(card["class_names"])
    sampling = card.get("sampling_A")
    for attr, want in (("n_inputs", n_inputs), ("n_classes", len(class_names) + 1)):
        have = getattr(model, attr, want)
        if have != want:
            raise ModelError(f"the model card implies {attr}={want} but the network has {have}.")
    return n_inputs, class_names, None if sampling is None else float(sampling)


def check_batch(batch: torch.Tensor, n_inputs: int) -> None:
    """ValueError unless ``batch`` is ``[B, n_inputs, H, W]``."""
    if batch.ndim != 4 or batch.shape[1] != n_inputs:
        raise ValueError(f"batch must have shape [B, {n_inputs}, H, W] "
                         f"(one channel per focal image); got {list(batch.shape)}.")
