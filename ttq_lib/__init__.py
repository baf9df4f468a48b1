"""ttq_lib: Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017) in PyTorch."""
from .bn import recalibrate_bn
from .checkpoint import load_model, load_pretrained, save_checkpoint
from .convert import layer_stats, ternarize_model, ternary_layers
from .layers import TernaryConv2d, TernaryLinear, clamp_scales_
from .models import build_model, resnet20, resnet32, resnet44, resnet56
from .quantizers import TTQFunction, TWNFunction, ternarize, ternary_codes, twn_scale, twn_ternarize
from .thresholds import threshold, threshold_max, threshold_sparsity, threshold_twn

__all__ = [
    "ternarize", "twn_ternarize", "twn_scale", "ternary_codes", "TTQFunction", "TWNFunction",
    "threshold", "threshold_max", "threshold_sparsity", "threshold_twn",
    "TernaryConv2d", "TernaryLinear", "clamp_scales_", "ternarize_model", "ternary_layers", "layer_stats",
    "resnet20", "resnet32", "resnet44", "resnet56", "build_model",
    "load_model", "load_pretrained", "save_checkpoint", "recalibrate_bn",
]
__version__ = "0.1.0"
