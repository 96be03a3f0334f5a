"""The annotated image: the grasp and the resolved object's box drawn over the model's view."""

import numpy as np

from appliance.grasp import GraspPose
from appliance.runtime.annotate import OBJECT_COLOUR, annotate


def test_the_object_box_is_drawn_on_its_edges_only():
    view = np.zeros((224, 224, 3), np.uint8)
    drawn = np.asarray(annotate(view, GraspPose(0.9, 0.9, 0.0), box=(50, 60, 120, 140)))
    blue = (drawn == OBJECT_COLOUR).all(axis=-1)
    assert blue[60, 50:120].all() and blue[139, 50:120].all() and blue[60:140, 50].all() and blue[60:140, 119].all()
    assert not blue[61:139, 51:119].any() and not blue[140].any() and not blue[:, 120].any()  # half-open: u1, v1 out
    assert not (np.asarray(annotate(view, GraspPose(0.9, 0.9, 0.0))) == OBJECT_COLOUR).all(axis=-1).any()
