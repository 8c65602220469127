"""The labels a conditional model can take, per dataset: a table at the bottom of
the house (no imports), read by `keras_vae.config` and the data sources."""

# CelebA's 40 binary attributes, in the order of tfds' feature dict (sorted):
# a cvae's multi-hot condition vector (tests/test_cvae.py checks the mock data).
CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs",
    "Big_Lips", "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows",
    "Chubby", "Double_Chin", "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup",
    "High_Cheekbones", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard",
    "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline", "Rosy_Cheeks", "Sideburns",
    "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
# What a cvae can be conditioned on (--condition), per dataset: name ->
# (size, multi_hot). A one-hot condition is a class id in [0, size); the
# multi-hot `attributes` is CelebA's 40 attributes at once. The first entry
# is the dataset's default. Names are the data's label names (shapes: its
# factors, tests/test_cvae.py checks the sizes against keras_vae.data.shapes).
CONDITIONS = {
    "shapes": {
        "shape": (3, False),
        "scale": (6, False),
        "orientation": (40, False),
        "pos_x": (32, False),
        "pos_y": (32, False),
    },
    "mnist": {"label": (10, False)},
    "fashion_mnist": {"label": (10, False)},
    "cifar10": {"label": (10, False)},
    "svhn_cropped": {"label": (10, False)},
    "celeb_a": {
        "attributes": (len(CELEBA_ATTRIBUTES), True),
        **{name: (2, False) for name in CELEBA_ATTRIBUTES},
    },
}
