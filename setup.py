"""creditfield: learned credit assignment for residual networks, without hidden backprop."""
import setuptools

CIFAR = ["tensorflow-datasets>=4.9.7", "array-record>=0.5", "pillow>=10", "importlib_resources"]

setuptools.setup(
    name="creditfield",
    version="0.1.0",
    description="Learned per-layer credit for deep residual networks without hidden-layer "
    "backprop, with oracle/DFA baselines, credit-quality diagnostics and Phase 6 "
    "phase6 studies.",
    packages=setuptools.find_packages(include=["creditfield", "creditfield.*"]),
    python_requires=">=3.10",
    install_requires=[
        "jax>=0.4.35",
        "flax>=0.10",
        "optax>=0.2.3",
        "chex>=0.1.87",
        "orbax-checkpoint>=0.9",
        "ml-collections>=0.1.1",
        "absl-py>=2.0",
        "numpy>=1.26",
        "scipy>=1.11",
        "matplotlib>=3.8",
        "tensorboard>=2.16",  # its event writer and reader; no TensorFlow
    ],
    extras_require={
        # CIFAR-10 through TFDS's NumPy path (array_record); no TensorFlow needed.
        "cifar": CIFAR,
        # The tests exercise the CIFAR-10 data path too, on tiny data they write.
        "test": ["pytest>=7", "pytest-xdist>=3.5"] + CIFAR,
    },
)
