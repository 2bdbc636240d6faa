"""Cameron's actors: the Thespian stand-ins for the original OTP gen_servers, one per file."""
