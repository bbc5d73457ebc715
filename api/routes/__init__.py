"""One module per group of routes, each with its own APIRouter."""
