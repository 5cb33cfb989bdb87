"""On PYTHONPATH of ansible's processes only: multiprocessing without /dev/shm, as on Lambda."""
from pipe_semaphore import install

install()
