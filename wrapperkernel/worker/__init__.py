"""The worker process: runs the user's cells in IPython and talks to the kernel over the
private link (``wrapperkernel.workerlink``). Nothing in here may import the kernel
package; the two share only the link's frames and the address channel's constants.
"""
