"""What a model file says about itself beyond its weights, read without torch.

Every exported network takes `planes` [B, C, H, W] and gives `policy_logits` [B, A]
and `value` [B]; the ONNX export, the registry signature, the Triton configs and the
evaluators all use these names, and none of them needs torch to know them.

The value discount is recorded in the ONNX file's metadata_props at export and in the
served Triton config at publication, so every search that plays a model (arena, gate,
web bot) backs its values up the way they were trained.
"""

INPUT_NAME = "planes"
OUTPUT_NAMES = ("policy_logits", "value")

# ONNX metadata_props key (and Triton config parameter): the per-ply discount the
# value head was trained with.
VALUE_DISCOUNT_KEY = "cartridge.value_discount"


def parse_value_discount(text: str | None, source: str) -> float:
    """The discount recorded as `text` in `source`; models from before it was recorded
    (no entry) were trained without one."""
    if text is None:
        return 1.0
    try:
        discount = float(text)
    except ValueError:
        discount = float("nan")
    if not 0 < discount <= 1:
        raise ValueError(f"{source} {VALUE_DISCOUNT_KEY}={text!r} is not a discount in (0, 1]")
    return discount
