"""OpenCV as the project uses it: imported here once, with one thread per process.

The project parallelises over processes (simgan.parallel.map_chunks forks workers), and its images
are small (35x55 eyes, 64x64 depth maps): OpenCV's own pthreads pool gains nothing on them and a
pool started before a fork is not safe to use in the child. Every module takes cv2 from here."""

from __future__ import annotations

import cv2

cv2.setNumThreads(1)

__all__ = ["cv2"]
