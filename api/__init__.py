"""The prediction API: GET /predict/{id} from the online store's features and the model endpoint."""
