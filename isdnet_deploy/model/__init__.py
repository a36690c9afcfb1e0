"""The PyTorch reference ISDNet; every exported backend is judged against it."""
