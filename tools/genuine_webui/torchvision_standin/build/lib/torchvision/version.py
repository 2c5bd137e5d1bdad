__version__ = "0.28.0"
cuda = None
