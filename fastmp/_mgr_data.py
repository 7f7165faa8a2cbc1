"""The manager typeids whose objects are fastmp's C queues and shared values (see _mgr_objects.py)."""

# typeid -> factory(manager, *args, **kwds): nothing here yet (those typeids are still made by
# the stdlib's server)
TYPEIDS = {}
