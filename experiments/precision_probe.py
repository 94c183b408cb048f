r"""What each matmul precision name does on this device.

  python experiments/precision_probe.py

Prints the relative error of a 512^3 fp32 matmul against float64 under
`jax.default_matmul_precision(name)`, with the dot traced and lowered inside the context, and
traced inside a jitted function's own context (as `credit.matmul_precision` wraps the
estimators). On an NVIDIA GPU, ~2e-7 is true fp32 and ~3e-4 TF32; a name whose error equals
tensorfloat32's is TF32 there, whatever it is called (`bfloat16` is Precision.DEFAULT, which
keeps fp32 operands and runs them in TF32).
"""
import jax
import numpy as np

NAMES = ("highest", "float32", "tensorfloat32", "high", "default", "bfloat16", "TF32_TF32_F32",
         "BF16_BF16_F32_X3")


def main():
  a = np.random.RandomState(0).randn(512, 512).astype(np.float32)
  b = np.random.RandomState(1).randn(512, 512).astype(np.float32)
  ref = a.astype(np.float64) @ b.astype(np.float64)
  rel = lambda c: float(np.linalg.norm(np.asarray(c, np.float64) - ref) / np.linalg.norm(ref))
  print(jax.devices()[0].device_kind, "JAX", jax.__version__)
  for name in NAMES:
    try:
      with jax.default_matmul_precision(name):
        inside = jax.jit(lambda x, y: x @ y)(a, b)

      def traced_inside(x, y, name=name):
        with jax.default_matmul_precision(name):
          return x @ y
      traced = jax.jit(traced_inside)(a, b)
      print(f"{name:18s} inside {rel(inside):.2e}  traced-inside {rel(traced):.2e}")
    except ValueError as e:  # a preset the backend does not support
      print(f"{name:18s} not supported here: {str(e)[:120]}")


if __name__ == "__main__":
  main()
