"""The address channel between the page and the user program, as seen by the kernel.

``events``       the core's vocabulary: events in, actions out, timer names, the
                 protocol's own addresses, ``AddressTimings``, ``AddressStateError``.
``payloads``     parsing of what the page sends: typed items, or what is wrong.
``core``         the state machine ``AddressCore``, with its three tables: the
                 channel's lifecycle, each page connection's and each program
                 request's.
``outbox``       batching and pacing of outgoing comm messages under Jupyter Server's
                 IOPub rate limits: one lane per page, one budget for all.
``defaults``     constants: default timeouts, acknowledgement pacing, the private prefix.
``page_script``  the ``text/html`` that installs the page client.

``events``, ``payloads``, ``core``, ``outbox`` and ``defaults`` are pure: they perform no
I/O, read no clock, start no thread and do not log (tests/test_address_core.py checks
the imports of the first four; ``defaults`` imports nothing); the kernel's adapter (``wrapperkernel.kernel.address_adapter``)
translates frames to events and actions to frames. ``page_script`` is the exception:
it finds the page client's JS file on disk (in the package, or in the repository's
``js/`` folder) and reads it, once, the first time it renders the install HTML.
"""
