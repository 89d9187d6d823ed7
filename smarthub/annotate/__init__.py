"""Pre-annotate for object detection: detectors, the Labelme codec, pre-annotation, evaluation, export."""
