"""The metadata an exported model carries: written as text properties, read back with its types."""

import dataclasses

from model.onnx_contract import ModelMetadata

METADATA = ModelMetadata(topology_version="2.141e23a26f60", input_size=128, trained=True, training_steps=29900,
                         num_vertices=7489, num_faces=14832, landmark_calibration="aflw2000-3d-dev (123 images)",
                         identity_threshold=17.2283, format_version="2")


def test_every_field_reads_back_as_written_with_its_type():
    properties = METADATA.to_properties()
    assert properties["facerecon.identity_threshold"] == "17.2283"
    read = ModelMetadata.from_properties(properties)
    assert read == METADATA
    for field in dataclasses.fields(ModelMetadata):
        assert type(getattr(read, field.name)) is type(getattr(METADATA, field.name)), field.name


def test_a_model_from_before_the_identity_threshold_is_not_calibrated():
    properties = METADATA.to_properties()
    del properties["facerecon.identity_threshold"]
    assert ModelMetadata.from_properties(properties) == dataclasses.replace(METADATA, identity_threshold=0.0)
