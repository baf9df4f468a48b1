"""Help texts several ``ttq`` commands share."""
from __future__ import annotations

from ..data.inputs import DATA_HELP  # noqa: F401  (where TrainConfig's --data help comes from too)
