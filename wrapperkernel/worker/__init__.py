"""The worker process: runs the user's cells in IPython and talks to the kernel over the
private channel. Nothing in here may import the kernel package; the two share only
``wrapperkernel.workerlink``.
"""
