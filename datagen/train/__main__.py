"""`python -m datagen.train pretrain|finetune|export-hf ...`: the entry torchrun/accelerate launch."""
from .cli import train_app

train_app()
