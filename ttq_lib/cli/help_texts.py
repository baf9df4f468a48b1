"""Help texts several ``ttq`` commands share."""
from __future__ import annotations

DATA_HELP = ("CIFAR-10 source: 'download' (torchvision, into data/), a cifar-10-batches-py folder, an "
             "image-folder tree or its .tar.gz (train/<class>/..., test/<class>/...), or 'synthetic'. "
             "Default: $TTQ_DATA, else download")


