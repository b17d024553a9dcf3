from .losses import cross_entropy, heads_loss, proposal_loss
from .loop import TrainConfig, train

__all__ = ["TrainConfig", "cross_entropy", "heads_loss", "proposal_loss", "train"]
