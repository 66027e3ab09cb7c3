"""Model families beyond the linear models of :mod:`dmtl.algorithms.federated`.

:mod:`dmtl.models.torch_models` holds neural components trained with PyTorch autograd; it is optional
(``pip install torch==2.13.0``) and imported only when an algorithm asks for it (``model=mlp``).
"""
