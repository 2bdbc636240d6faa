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


def test_the_engine_raises_its_soft_limit_of_open_files_for_the_processes_it_starts():
    # Given a process whose soft limit is Linux's usual 1,024 (or its hard one, if lower)
    import subprocess
    import sys
    script = (
        "import resource, subprocess, sys\n"
        "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (min(1024, hard), hard))\n"
        "from cameron import actorsys\n"
        "now = actorsys.more_open_files(most=4096)\n"
        "child = subprocess.run([sys.executable, '-c', 'import resource; "
        "print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])'], capture_output=True, text=True)\n"
        "print(hard, now, child.stdout.strip())\n")
    # When it asks for more (at most 4,096 here)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    hard, now, childs = (int(x) if x.lstrip("-").isdigit() else x for x in out.split())
    # Expect its hard limit, capped, and the processes it starts to have it too
    expected = 4096 if hard < 0 else min(hard, 4096)  # RLIM_INFINITY is -1
    assert now == expected and childs == expected
