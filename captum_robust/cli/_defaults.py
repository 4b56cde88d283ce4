"""Defaults shared by several subcommands: the digits images, and the certified Sparsified
SmoothGrad of ``demo`` that are also the defaults of ``evaluate`` and ``certify``."""

#: The digits are upsampled to 28 x 28 (like MNIST); the test split holds 20% of the 1,797 images.
IMAGE_SIZE = 28
TEST_FRACTION = 0.2
#: Certified Sparsified SmoothGrad (Levine et al.): sparsity tau, noise sigma (pixels in [0, 1]),
#: noisy samples (8 images x 2048 samples take about 2-4 s on one thread), top-K with K = 20% of
#: the pixels, l2 radius rho and confidence p, as in the paper's ImageNet setting.
SMOOTHGRAD_SPARSITY = 0.1
SMOOTHGRAD_SIGMA = 0.2
SMOOTHGRAD_SAMPLES = 2048
CERT_K_FRACTION = 0.2
CERT_RHO = 0.03
CERT_CONFIDENCE = 0.95
