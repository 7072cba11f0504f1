"""How a converter variant (`pipeline.variants.ConverterVariant`) is made (imports
TensorFlow): the TFLite converter (`pipeline.produce.convert`), on the source model's
SavedModel, or on a copy of the float Keras model whose weights are adjusted first
(`pipeline.produce.adjust`). A full-integer variant records its per-layer table; a selective
one keeps its worst layers in float by it (`pipeline.produce.layer_errors`)."""

from __future__ import annotations

from pipeline.artifacts import LAYER_ERRORS
from pipeline.io import write_text
from pipeline.produce import convert, layer_errors, model_store
from pipeline.produce.adaround import Grid
from pipeline.produce.adjust import Adjustments, adjust_weights
from pipeline.produce.producer import WORST_LAYERS, Folder, Inputs, Produced, Producer
from pipeline.variants import FLOAT_TFLITE, ConverterVariant


class ConverterProducer(Producer):
    """`tf.lite.TFLiteConverter`, set up by the variant's fields."""

    KIND = ConverterVariant

    def produce(self, spec: ConverterVariant, inputs: Inputs, out: Folder) -> Produced:
        calibration = inputs.calibration
        try:
            model = inputs.source.load(spec.source_form)  # the Keras model if it is adjusted
        except model_store.ModelUnavailable:
            if not spec.plain:
                raise
            # a float model that is only a .tflite (from PyTorch): it is the plain conversion
            return Produced(inputs.source.load(FLOAT_TFLITE).read_bytes())
        if spec.adjusts_weights:  # a copy: equalized, bias-corrected, AdaRounded
            grid = Grid(8, spec.per_channel) if spec.rounding == "adaround" else None
            model = adjust_weights(model, spec, calibration, Adjustments(
                equalize=spec.equalize, bias_correction=spec.bias_correction,
                per_channel=spec.per_channel, adaround=grid), out)
        # The stored table is the unadjusted float model's: an adjusted one gets its own.
        table = (inputs.stored_table(spec) if spec.full_integer and not spec.adjusts_weights
                 else None)
        if spec.full_integer and calibration is not None and table is None:
            table = layer_errors.layer_table(model, spec, calibration, inputs.selection)
        layers = table.rows if table and table.rows is not None else []
        if table and table.rows is not None:
            write_text(out / LAYER_ERRORS, layer_errors.to_csv(layers))
            out.note(worst_layers=layers[:WORST_LAYERS])
        elif table:
            out.note(layer_errors_error=table.error)
        if not spec.selective:
            return Produced(convert.convert(model, spec, calibration))
        assert calibration is not None  # full_integer implies representative data
        if table is None or table.rows is None:
            raise RuntimeError("the per-layer error this variant chooses its float layers by "
                               f"is unavailable: {table and table.error}")
        denylist = layer_errors.choose_denylist(layers, spec.denylist_top_k,
                                                spec.denylist_threshold)
        out.note(denylisted_nodes=denylist)
        return Produced(layer_errors.convert_selective(model, spec, calibration, denylist))
