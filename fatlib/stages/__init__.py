"""The Ray stages: preprocess, train, infer (independent of each other), tune and lr_find
(which drive the training stage), on the runtime that connects them to Ray.

Each stage package splits a light `config` module (its config dataclass and result, importable
without torch or Ray so --help stays fast) from the modules that run it.
"""
