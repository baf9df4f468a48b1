"""ttq_lib.training.evaluate: logits on uint8 images and the forward-pass timer."""
import torch

import ttq_lib
from ttq_lib.training import evaluate


def test_predict_logits_and_time_forward():
    model = ttq_lib.resnet20().eval()
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    mean, std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    logits = evaluate.predict_logits(model, x, mean, std, batch_size=4)
    with torch.no_grad():
        direct = model((x.float() / 255 - 0.5) / 0.25)
    assert logits.shape == (6, 10) and torch.allclose(logits, direct, atol=1e-5)
    assert evaluate.time_forward(model, direct[:1].new_zeros(1, 3, 32, 32), repeats=2) > 0
