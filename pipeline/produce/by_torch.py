"""How a litert-torch variant (`pipeline.variants.TorchVariant`) is made: PT2E quantization
of the PyTorch model's exported program (`prepare_pt2e`, the calibration samples through it
for static ranges, `convert_pt2e`), then litert-torch's conversion with that quantizer
(`pipeline.produce.intake.to_tflite`). Needs the torch extra; imports torch only here."""

from __future__ import annotations

import numpy as np

from pipeline.produce import intake
from pipeline.produce.producer import Folder, Inputs, Produced, Producer
from pipeline.variants import TorchVariant

CALIBRATION_BATCH = 32  # calibration samples per forward pass through the observers


class TorchProducer(Producer):
    """litert-torch's PT2E quantizer, by the variant's mode and granularity."""

    KIND = TorchVariant

    def produce(self, spec: TorchVariant, inputs: Inputs, out: Folder) -> Produced:
        program_path = inputs.source.load(spec.source_form)  # ModelUnavailable: not torch
        torch, _ = intake.import_torch()
        from litert_torch.quantize import pt2e_quantizer, quant_config
        from torchao.quantization.pt2e import quantize_pt2e

        program = torch.export.load(str(program_path))
        quantizer = pt2e_quantizer.PT2EQuantizer().set_global(
            pt2e_quantizer.get_symmetric_quantization_config(
                is_per_channel=spec.per_channel, is_dynamic=spec.mode == "dynamic"))
        model = quantize_pt2e.prepare_pt2e(program.module(), quantizer)
        sample = inputs.calibration if inputs.calibration is not None else inputs.comparison
        if sample is None or not len(sample):
            raise ValueError("litert-torch's PT2E quantization needs samples to run through "
                             "the model")
        batch = CALIBRATION_BATCH
        with torch.no_grad():
            try:
                model(torch.from_numpy(np.asarray(sample[:batch], np.float32)))
                start = batch
            except Exception:  # a program exported with a fixed batch of 1
                batch, start = 1, 0
            for start in range(start, len(sample), batch):
                model(torch.from_numpy(np.asarray(sample[start:start + batch], np.float32)))
        model = quantize_pt2e.convert_pt2e(model, fold_quantize=False)
        out.note(pt2e={"mode": spec.mode, "per_channel": spec.per_channel,
                       "calibration_samples": int(len(sample)) if spec.calibrated else 0})
        # the float model's conversion found whether a free batch size converts
        free = (inputs.source.intake or {}).get("batch", 1) != 1
        flat = intake.to_tflite(model, np.asarray(sample[:1], np.float32),
                                quant_config.QuantConfig(pt2e_quantizer=quantizer), free)
        return Produced(flat)
