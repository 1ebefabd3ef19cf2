package Test::Nginx::POP3;

# POP3 client for tests (same API as the official suite's Test::Nginx::POP3).

use warnings;
use strict;

use base qw/ Test::Nginx::Mail /;
use Test::More qw//;

sub new {
	my ($class, %args) = @_;
	return $class->connect_client(8110, %args);
}

sub ok {
	my $self = shift;
	Test::More->builder->like($self->read() // '', qr/^\+OK/, @_);
}

1;
