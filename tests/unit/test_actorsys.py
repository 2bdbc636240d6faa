"""How Cameron adjusts Thespian's TCP transport in every process that uses it."""

import inspect
import selectors

from cameron import actorsys


def test_thespians_transport_waits_with_poll_not_a_new_epoll_set_each_turn():
    from thespian.system.transport import TCPTransport
    # The transport still makes its selector on each turn (else the adjustment is dead code
    # after an upgrade of Thespian, and this says so) ...
    assert "selectors.DefaultSelector()" in inspect.getsource(TCPTransport.TCPTransport._runWithExpiry)
    # ... and once a process has set Thespian up, that selector is poll()'s
    actorsys._adjust_thespian()
    assert TCPTransport.selectors.DefaultSelector is selectors.PollSelector
    sel = TCPTransport.selectors.DefaultSelector()
    sel.register(0, TCPTransport.selectors.EVENT_READ)
    sel.close()
