"""ego3s: Select, Strengthen, Synchronize - data-efficient RL fine-tuning of video VLMs for egocentric reasoning."""

__version__ = "0.1.0"
