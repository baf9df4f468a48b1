"""Help texts several ``ttq`` commands share."""
from __future__ import annotations

DATA_HELP = ("CIFAR-10 source: a cifar-10-batches-py folder, an image-folder tree or its .tar.gz "
             "(train/<class>/..., test/<class>/...), 'download' (torchvision, into the user cache), or 'synthetic' "
             "(made-up images, on purpose only). Default: $TTQ_DATA, else the offline copy ../shared, else the user "
             "cache ($TTQ_CACHE or ~/.cache/ttq-workbook), else a download (see `ttq inputs`)")


