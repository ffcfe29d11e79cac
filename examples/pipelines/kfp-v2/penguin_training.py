"""A small KFP v2 pipeline: one component prepares a dataset, the next trains a model on it and
outputs the model as an artifact. Compiled by the `kfp-sdk` framework with
`parameters.pipeline: penguin_training.pipeline`.

The components run in the Pipeline's image (KFP_PIPELINE_IMAGE, set while the compiler imports
this module), which has the KFP SDK already.
"""

import os

from kfp import dsl

IMAGE = os.environ.get("KFP_PIPELINE_IMAGE", "python:3.11")


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def prepare_data(rows: int, dataset: dsl.Output[dsl.Dataset]):
    import csv
    import random

    random.seed(rows)
    with open(dataset.path, "w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["flipper_length_mm", "body_mass_g"])
        for _ in range(rows):
            flipper = random.uniform(170, 230)
            writer.writerow([round(flipper, 1), round(flipper * 21 + random.gauss(0, 150))])
    dataset.metadata["rows"] = rows


@dsl.component(base_image=IMAGE, install_kfp_package=False)
def train(dataset: dsl.Input[dsl.Dataset], epochs: int, model: dsl.Output[dsl.Model]) -> float:
    import csv
    import json

    with open(dataset.path, newline="") as source:
        rows = [(float(x), float(y)) for x, y in list(csv.reader(source))[1:]]
    slope, intercept, rate = 0.0, 0.0, 1e-5
    for _ in range(epochs * 100):
        grad_slope = sum((slope * x + intercept - y) * x for x, y in rows) / len(rows)
        grad_intercept = sum(slope * x + intercept - y for x, y in rows) / len(rows)
        slope, intercept = slope - rate * grad_slope, intercept - rate * grad_intercept
    loss = sum((slope * x + intercept - y) ** 2 for x, y in rows) / len(rows)
    with open(model.path, "w") as out:
        json.dump({"slope": slope, "intercept": intercept}, out)
    model.metadata["framework"] = "linear-regression"
    return loss


@dsl.pipeline(name="penguin-training", description="Prepares penguin measurements and trains a model on them.")
def pipeline(rows: int = 200, epochs: int = 5):
    data = prepare_data(rows=rows)
    train(dataset=data.outputs["dataset"], epochs=epochs)
