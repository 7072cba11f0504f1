"""Stage footprint: what each variant costs on a device: MACs, GPU delegate compatibility,
TensorFlow Lite for Microcontrollers' arena and its kernels' outputs, Arm Vela's SRAM, flash,
NPU operators and cycles per configured Ethos-U.

    python stages/footprint.py   # outputs: pipeline.layout; config: params.yaml
"""

from pipeline import cli
from pipeline.steps import footprint

if __name__ == "__main__":
    cli.stage(__doc__, footprint.run)
