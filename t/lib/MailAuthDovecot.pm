package MailAuthDovecot;

# A real Dovecot (Debian's dovecot-imapd / dovecot-pop3d) as the backend of the tests, written
# for this project: its own configuration, runtime directories (base_dir, state_dir), pid file
# and log in a directory of the test, IMAP and POP3 listeners on 127.0.0.1 only (no TLS, no
# imaps/pop3s/submission listeners), Maildirs under that directory. The system's Dovecot
# configuration and service are not used.
#
#   my $dovecot = MailAuthDovecot->new("$dir/dovecot", imap => port(8144), pop3 => port(8111),
#       passdb => $passwd_file, masters => $masters_file);
#   $dovecot->deliver('alice', $message);   # into <dir>/mail/alice/Maildir-style new/
#   $dovecot->start();                      # returns once IMAP and POP3 answer; dies with the
#                                           # log's tail if Dovecot does not come up
#   ... $dovecot->log() ...                 # its log since then (auth_verbose: failed passdb
#                                           # checks, master logins), full_log(): all of it
#   $dovecot->stop();
#
# passdb: a Dovecot passwd-file (the module's own store file in the tests); masters: an
# optional passwd-file of master users (auth_master_user_separator "*": "bob*master" logs in
# to bob's mailbox with master's password). userdb: static, every user's mail under
# <dir>/mail/%u, owned by nobody:nogroup when run as root (by the running user otherwise).
#
# lua => { script => PATH, url => URL, credentials => FILE }: passdb, userdb and the userdb
# iterate are Dovecot's Lua driver running that script (nginx-conf/dovecot-mail-auth.lua, which
# asks the module's mail_auth_json location at URL with the Basic credentials in FILE); passdb
# is then not needed, mail runs as mail_uid/mail_gid (the same owner), and quota => 1 turns on
# the quota plugin (maildir quota; the rules come from the userdb's quota_rule).
#
# Stopped by stop(), and in any case when the object goes away, in an END block (a failed or
# dying test) or on SIGINT/SIGTERM/SIGHUP: the master's pid is remembered at start, so stopping
# works even when the test directory is already gone.

use warnings;
use strict;

use File::Path qw/ make_path /;
use IO::Socket::INET;
use POSIX qw/ WNOHANG /;
use Time::HiRes qw/ sleep /;

my %running;    # pid => object, in the process that started it

sub available {
	return !system('dovecot --version >/dev/null 2>&1')
		&& -x '/usr/lib/dovecot/imap' && -x '/usr/lib/dovecot/pop3'
		&& -x '/usr/lib/dovecot/imap-login' && -x '/usr/lib/dovecot/pop3-login';
}

# the first of the names that exists as a user (group); undef if none does
sub existing_user { for (@_) { return $_ if defined getpwnam($_); } return undef; }
sub existing_group { for (@_) { return $_ if defined getgrnam($_); } return undef; }

sub new {
	my ($class, $dir, %o) = @_;
	die "MailAuthDovecot: imap, pop3 and passdb (or lua) are needed\n"
		unless $o{imap} && $o{pop3} && ($o{passdb} || $o{lua});
	make_path("$dir/run", "$dir/state", "$dir/mail");
	my $self = bless { dir => $dir, %o }, $class;

	my ($internal, $internal_group, $login, $mail_user, $mail_group);
	if ($> == 0) {
		# Dovecot's own unprivileged users (dovecot-core creates them); mail as nobody
		$internal = existing_user('dovecot', 'nobody');
		$internal_group = existing_group('dovecot', 'nogroup', 'nobody');
		$login = existing_user('dovenull', 'nobody');
		$mail_user = 'nobody';
		$mail_group = existing_group('nogroup', 'nobody');
	} else {
		# not root: everything runs as the current user, no chroot for the login processes
		$internal = $login = $mail_user = getpwuid($>);
		$internal_group = $mail_group = getgrgid($) + 0);
	}
	$self->{mail_owner} = [ $mail_user, $mail_group ];
	my $chroot = $> == 0 ? '' : "  chroot =\n";
	my $first_uid = (getpwnam($mail_user))[2];

	my $masters = $o{masters} ? <<"EOF" : '';
passdb {
  driver = passwd-file
  master = yes
  args = $o{masters}
}
EOF
	my $auth = <<"EOF";
passdb {
  driver = passwd-file
  args = @{[ $o{passdb} // '' ]}
}
userdb {
  driver = static
  args = uid=$mail_user gid=$mail_group home=$dir/mail/%u
}
EOF
	if (my $l = $o{lua}) {
		$auth = <<"EOF";
auth_failure_delay = 0
import_environment = TZ MAIL_AUTH_JSON_URL=$l->{url} MAIL_AUTH_JSON_CREDENTIALS=$l->{credentials}
mail_uid = $mail_user
mail_gid = $mail_group
mail_home = $dir/mail/%u
passdb {
  driver = lua
  args = file=$l->{script} blocking=yes
}
userdb {
  driver = lua
  args = file=$l->{script} blocking=yes
}
EOF
		$auth .= <<"EOF" if $o{quota};
mail_plugins = \$mail_plugins quota
protocol imap {
  mail_plugins = \$mail_plugins imap_quota
}
plugin {
  quota = maildir:User quota
}
EOF
	}
	$self->write('dovecot.conf', <<"EOF");
# written by t/lib/MailAuthDovecot.pm for one test; nothing here is the system's config
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
default_internal_user = $internal
default_internal_group = $internal_group
default_login_user = $login
first_valid_uid = $first_uid
last_valid_uid = $first_uid
mail_location = maildir:$dir/mail/%u
auth_master_user_separator = *
$masters
$auth
service imap-login {
$chroot  inet_listener imap {
    address = 127.0.0.1
    port = $o{imap}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
$chroot  inet_listener pop3 {
    address = 127.0.0.1
    port = $o{pop3}
  }
  inet_listener pop3s {
    port = 0
  }
}
service submission-login {
  inet_listener submission {
    port = 0
  }
}
service imap-urlauth-login {
  inet_listener imap-urlauth {
    port = 0
  }
}
service anvil {
$chroot}
EOF
	return $self;
}

# doveadm against this Dovecot (its config, so its sockets): output and exit status
sub doveadm {
	my ($self, @args) = @_;
	open my $fh, '-|', 'doveadm', '-c', $self->conf(), @args or die "doveadm: $!\n";
	local $/;
	my $out = <$fh> // '';
	close $fh;
	return wantarray ? ($out, $? >> 8) : $out;
}

sub write {
	my ($self, $name, $content) = @_;
	open my $fh, '>', "$self->{dir}/$name" or die "$self->{dir}/$name: $!\n";
	print $fh $content;
	close $fh;
}

sub dir { return $_[0]->{dir}; }
sub conf { return "$_[0]->{dir}/dovecot.conf"; }
sub pid { return $_[0]->{pid}; }

# Puts a message into the user's Maildir (new/), as a delivery agent would.
sub deliver {
	my ($self, $user, $message) = @_;
	my $md = "$self->{dir}/mail/$user";
	make_path("$md/new", "$md/cur", "$md/tmp");
	my $n = ++$self->{delivered};
	my $file = "$md/new/1700000000.M${n}P$$.mail-auth-test";
	open my $fh, '>', $file or die "$file: $!\n";
	print $fh $message;
	close $fh;
	$self->own("$self->{dir}/mail");
	return $file;
}

# the mail processes run as the userdb's uid/gid
sub own {
	my ($self, $top) = @_;
	return unless $> == 0;
	my ($user, $group) = @{$self->{mail_owner}};
	system('chown', '-R', "$user:$group", $top) == 0 or die "chown $top failed\n";
}

sub start {
	my ($self) = @_;
	die "Dovecot already started\n" if $self->{pid};
	my $pidfile = "$self->{dir}/run/master.pid";
	unlink $pidfile;
	if (system('dovecot', '-c', $self->conf()) != 0) {
		die "dovecot did not start:\n" . $self->log_tail();
	}
	my $pid;
	for (1 .. 100) {
		if (open my $fh, '<', $pidfile) {
			$pid = <$fh>;
			chomp $pid if defined $pid;
			last if defined $pid && $pid =~ /^\d+$/;
			undef $pid;
		}
		sleep 0.1;
	}
	die "dovecot wrote no pid file:\n" . $self->log_tail() unless $pid;
	$self->{pid} = $pid;
	$self->{owner} = $$;
	$running{$pid} = $self;
	install_signal_handlers();
	$self->wait_ready();
	return $self;
}

# Ready: each listener greets (login processes greet once the auth service is up). The probe
# sessions end with LOGOUT/QUIT; log() starts after their lines, so a test sees only its own.
sub wait_ready {
	my ($self) = @_;
	my %probe = (imap => [ qr/^\* OK/, "a LOGOUT\r\n" ], pop3 => [ qr/^\+OK/, "QUIT\r\n" ]);
	for my $proto (qw/ imap pop3 /) {
		my $greeted;
		for (1 .. 100) {
			my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{$proto}",
				Proto => 'tcp', Timeout => 5);
			if ($s) {
				$greeted = eval {
					local $SIG{ALRM} = sub { die "timeout\n" };
					alarm(5);
					my $line = <$s>;
					my $ok = defined $line && $line =~ $probe{$proto}[0];
					if ($ok) {
						print $s $probe{$proto}[1];
						1 while defined($line = <$s>) && $line !~ /^a OK|^\+OK/;
					}
					alarm(0);
					$ok;
				};
				alarm(0);
				close $s;
				last if $greeted;
			}
			sleep 0.1;
		}
		die "Dovecot's $proto listener on port $self->{$proto} does not answer:\n"
			. $self->log_tail() unless $greeted;
	}
	for (1 .. 50) {
		my $n = () = $self->full_log() =~ /-login: Info: (?:Disconnected|Aborted login)/g;
		last if $n >= 2;
		sleep 0.1;
	}
	$self->{log_offset} = length $self->full_log();
}

# Dovecot's log since it was ready (without start()'s probe sessions); full_log(): all of it
sub log {
	my ($self) = @_;
	return substr($self->full_log(), $self->{log_offset} // 0);
}

sub full_log {
	open my $fh, '<', "$_[0]->{dir}/dovecot.log" or return '';
	local $/;
	return <$fh> // '';
}

sub log_tail {
	my ($self) = @_;
	my @l = split /\n/, $self->full_log();
	splice @l, 0, @l - 20 if @l > 20;
	return join('', map { "    $_\n" } @l);
}

sub running {
	my ($self) = @_;
	return $self->{pid} && kill(0, $self->{pid});
}

sub stop {
	my ($self) = @_;
	# a forked child (a fake backend daemon, a client) exiting must not stop it
	return unless $self->{pid} && $self->{owner} == $$;
	my $pid = delete $self->{pid};
	delete $running{$pid};
	# the master ends its children and removes its pid file; "doveadm stop" does the same
	# as SIGTERM, but needs the config file, which may already be gone
	kill 'TERM', $pid;
	for (1 .. 100) {
		waitpid($pid, WNOHANG);    # reaps it if it happens to be our child
		return unless kill(0, $pid);
		sleep 0.1;
	}
	kill 'KILL', $pid;
}

sub DESTROY {
	local ($?, $!, $@);
	$_[0]->stop();
}

my $handlers_installed;

# A test killed by ^C or a timeout still stops its Dovecot: the signal becomes an exit, so END
# blocks (ours, and Test::Nginx's object destruction stopping nginx) run. Handlers a test set
# itself, and signals it ignores, are left alone.
sub install_signal_handlers {
	return if $handlers_installed++;
	for my $sig (qw/ INT TERM HUP /) {
		next if defined $SIG{$sig} && $SIG{$sig} ne 'DEFAULT' && $SIG{$sig} ne '';
		$SIG{$sig} = sub { stop_all(); exit 128 + ($sig eq 'INT' ? 2 : $sig eq 'TERM' ? 15 : 1); };
	}
}

sub stop_all { $_->stop() for values %running; }

END {
	local ($?, $!, $@);
	stop_all();
}

1;
