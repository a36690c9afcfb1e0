"""The 2-level Laplacian pyramid feeding ISDNet's shallow branch, in two implementations.

``torch_ops`` is the op inside the model (and so inside an exported graph); ``opencv_ops``
computes the same 6-channel residual with NumPy/OpenCV for runtimes that prepare it in a
prefetch stage (the paper: "Gaussian blur has been highly optimized in OpenCV"). This
package's ``__init__`` imports neither torch nor cv2.
"""
