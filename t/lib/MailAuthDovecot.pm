package MailAuthDovecot;

# A real Dovecot (Debian's dovecot-imapd / dovecot-pop3d) as the backend of the tests, written
# for this project: its own configuration, runtime directories and log in a directory of the
# test, IMAP and POP3 listeners on 127.0.0.1 only, Maildirs under that directory. Stopped by
# stop() or, at the latest, when the object goes away.
#
#   my $dovecot = MailAuthDovecot->new("$dir/dovecot", imap => $port1, pop3 => $port2,
#       passdb => $file, masters => $file2);
#   $dovecot->deliver('alice', $message);
#   $dovecot->start();  ...  $dovecot->stop();

use warnings;
use strict;

use File::Path qw/ make_path /;
use Time::HiRes qw/ sleep /;

sub available {
	return !system('dovecot --version >/dev/null 2>&1')
		&& -x '/usr/lib/dovecot/imap' && -x '/usr/lib/dovecot/pop3';
}

sub new {
	my ($class, $dir, %o) = @_;
	make_path("$dir/run", "$dir/state", "$dir/mail");
	my $self = bless { dir => $dir, %o }, $class;
	my $masters = $o{masters} ? <<"EOF" : '';
passdb {
  driver = passwd-file
  master = yes
  args = $o{masters}
}
EOF
	$self->write('dovecot.conf', <<"EOF");
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
protocols = imap pop3
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_internal_user = dovecot
default_internal_group = dovecot
default_login_user = dovenull
first_valid_uid = 1
mail_location = maildir:$dir/mail/%u
auth_master_user_separator = *
$masters
passdb {
  driver = passwd-file
  args = $o{passdb}
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$dir/mail/%u
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $o{imap}
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
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
EOF
	return $self;
}

sub write {
	my ($self, $name, $content) = @_;
	open my $fh, '>', "$self->{dir}/$name" or die "$self->{dir}/$name: $!\n";
	print $fh $content;
	close $fh;
}

# Puts a message into the user's Maildir (new/), as a delivery agent would.
sub deliver {
	my ($self, $user, $message) = @_;
	my $md = "$self->{dir}/mail/$user";
	make_path("$md/new", "$md/cur", "$md/tmp");
	my $n = ++$self->{delivered};
	open my $fh, '>', "$md/new/1700000000.M${n}P$$.test" or die "$md: $!\n";
	print $fh $message;
	close $fh;
	# the mail processes run as nobody:nogroup (userdb)
	system('chown', '-R', 'nobody:nogroup', "$self->{dir}/mail") == 0 or die "chown failed\n";
}

sub conf { return "$_[0]->{dir}/dovecot.conf"; }

sub start {
	my ($self) = @_;
	system('dovecot', '-c', $self->conf()) == 0 or die "dovecot did not start, see "
		. "$self->{dir}/dovecot.log\n";
	$self->{started} = 1;
	for (1 .. 50) {
		last if -e "$self->{dir}/run/master.pid";
		sleep 0.1;
	}
	return $self;
}

sub log { open my $fh, '<', "$_[0]->{dir}/dovecot.log" or return ''; local $/; return <$fh>; }

sub stop {
	my ($self) = @_;
	return unless delete $self->{started};
	system("doveadm -c '" . $self->conf() . "' stop >/dev/null 2>&1");
	my $pidfile = "$self->{dir}/run/master.pid";
	for (1 .. 50) {
		last unless -e $pidfile;
		sleep 0.1;
	}
	if (open my $fh, '<', $pidfile) {
		my $pid = <$fh>;
		kill 'KILL', $pid if $pid && $pid =~ /^\d+$/;
	}
}

sub DESTROY { $_[0]->stop(); }

1;
