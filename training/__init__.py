"""Training: the SageMaker-contract training entry point, local and SageMaker runners, and the model registry."""
