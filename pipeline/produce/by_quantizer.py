"""How a LiteRT Quantizer variant (`pipeline.variants.QuantizerVariant`) is made: the
quantizer on the float model's `.tflite` (`pipeline.produce.litert_quantizer`); for
AdaRound, on the `.tflite` of a copy of the float Keras model whose weights were rounded
first (`pipeline.produce.adjust`, imports TensorFlow). Writes the applied recipe."""

from __future__ import annotations

from pipeline.artifacts import RECIPE
from pipeline.io import write_bytes, write_json
from pipeline.produce import convert, litert_quantizer
from pipeline.produce.adaround import Grid
from pipeline.produce.adjust import Adjustments, adjust_weights
from pipeline.produce.producer import AppliedRecipe, Folder, Inputs, Produced, Producer
from pipeline.variants import ConverterVariant, QuantizerVariant


class QuantizerProducer(Producer):
    """Google's LiteRT Quantizer (`litert-quantizer`), by the variant's recipe and rules."""

    KIND = QuantizerVariant

    def produce(self, spec: QuantizerVariant, inputs: Inputs, out: Folder) -> Produced:
        start = inputs.source.load(spec.source_form)  # the float .tflite, or the Keras model
        if spec.adjusts_weights:  # AdaRound: round a copy's weights, then its float .tflite
            bits = 4 if "wi4" in (spec.recipe or "") else 8  # int4 leaves depthwise convs float
            grid = Grid(bits, True, ("Conv2D", "Dense")) if bits == 4 else Grid(bits, True)
            model = adjust_weights(start, spec, inputs.calibration, Adjustments(adaround=grid),
                                   out)
            start = write_bytes(out.scratch / "adjusted.tflite", convert.convert(
                model, ConverterVariant("float32", source="float")))
        flatbuffer, recipe = litert_quantizer.quantize(start, spec, inputs.calibration)
        write_json(out / RECIPE, recipe)
        return Produced(flatbuffer, AppliedRecipe(start, recipe))
