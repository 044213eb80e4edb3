"""BagNet evidence next to the post-hoc attribution methods users already use, and a faithfulness measure.

:func:`attribute` gives, for a batch of images and target classes, per-pixel maps (N, H, W) on the input's pixel
grid from

- ``evidence``: a BagNet's exact class evidence (:func:`bagnet.heatmap`; BagNets only);
- ``saliency``: |∂ logit / ∂ pixel|, the maximum over colour channels (Simonyan et al. 2014; Captum);
- ``integrated_gradients``: Integrated Gradients from a baseline image, summed over channels (Captum);
- ``deeplift``: DeepLIFT (rescale rule) from the same baseline, summed over channels (Captum);
- ``lrp_epsilon``: LRP with a pure ε rule on every convolution and linear layer, summed over channels (Zennit 0.5),
  after canonizers that fold BatchNorm into the layer before it and route residual sums through a proportional
  rule — torchvision's BasicBlock/Bottleneck and BagNet's own (cropping) Bottleneck;
- ``gradcam``: Grad-CAM on the last convolutional stage (Captum's LayerGradCam), ReLU applied, placed on the pixel
  grid: for BagNets each cell at the centre of the patch it sees, for other models bilinearly resized; for a ViT
  (timm's ``VisionTransformer``) on the tokens entering the last block's attention, on the token grid;
- ``attention_rollout``: ViTs only, attention rollout of the class token (Abnar & Zuidema 2020; :mod:`.tokens`),
  the same map for every class. DeepLIFT and LRP-ε are unavailable for attention models (no rule for attention).

A method that cannot handle a model is listed in ``Attributions.unavailable`` with the reason; it is never dropped
silently. Where a method has a completeness property, the gap is measured and reported
(``Attributions.completeness``): IG and DeepLIFT sum to ``f(x) − f(baseline)``; LRP-ε sums to ``f(x)`` minus what
the biases absorb (exactly ``f(x)`` for a bias-free ReLU network as ε → 0).

:func:`deletion_insertion` measures faithfulness without favouring any method: every map is reduced to the same
grid of square patches (the sum of the map inside each), the patches are removed (deletion, most relevant first)
or revealed (insertion) in that order with the same fill, and the target's softmax probability is recorded;
the area under each curve is reported next to random orders as the floor.
"""

from .compare import AttributionComparison, compare
from .faithfulness import Faithfulness, FaithfulnessConfig, deletion_insertion
from .methods import (BASELINES, METHODS, SIGNED, AttributionConfig, Attributions, attribute,
                      predicted_classes)
from .tokens import attention_maps, attention_rollout, is_token_model, token_gradcam
from .surgery import (bagnet_canonizer, epsilon_composite, gradcam_layer, place_cells, reused_activations,
                      separate_activations, separated_activations, unmerged_batchnorms)

__all__ = [
    "METHODS", "SIGNED", "BASELINES", "AttributionConfig", "Attributions", "attribute", "predicted_classes",
    "FaithfulnessConfig", "Faithfulness", "deletion_insertion", "AttributionComparison", "compare",
    "separate_activations", "separated_activations", "reused_activations", "unmerged_batchnorms", "epsilon_composite", "bagnet_canonizer",
    "gradcam_layer", "place_cells", "attention_maps", "attention_rollout", "is_token_model", "token_gradcam",
]
