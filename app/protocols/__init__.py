"""Protocol adapters: each turns one wire format into `DataPlane` calls and back.

Each module offers `build_router() -> fastapi.APIRouter`; `app.main.create_app` includes them.
They know HTTP and nothing of TensorFlow.
"""
