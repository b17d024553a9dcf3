from .losses import head_loss, proposal_loss
from .loop import TrainConfig, train

__all__ = ["TrainConfig", "head_loss", "proposal_loss", "train"]
