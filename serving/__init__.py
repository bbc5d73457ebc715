"""The model server (SageMaker's container contract), SageMaker deployment and batch scoring."""
