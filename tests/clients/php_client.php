<?php
// The client scenario through PHP's memcached extension (on libmemcached),
// text or binary protocol.
//
//     php php_client.php text|binary WRITER READER PREFIX
//
// Writes go through WRITER, reads through READER (HOST:PORT each). Exits
// non-zero at the first check that fails, naming it.

const TOKEN_LIMIT = 4294967296; // 2^32

function fail($what) {
    echo "FAIL $what\n";
    exit(1);
}

function check($what, $got, $want) {
    if ($got !== $want) {
        fail("$what: got " . var_export($got, true) . ", want " . var_export($want, true));
    }
}

function client($addr, $binary) {
    [$host, $port] = explode(':', $addr);
    $m = new Memcached();
    $m->setOption(Memcached::OPT_BINARY_PROTOCOL, $binary);
    // append and prepend need uncompressed values.
    $m->setOption(Memcached::OPT_COMPRESSION, false);
    $m->addServer($host, (int)$port);
    return $m;
}

function gets($m, $key) {
    $got = $m->get($key, null, Memcached::GET_EXTENDED);
    return $got === false ? [false, null] : [$got['value'], $got['cas']];
}

[$_, $mode, $writer, $reader, $p] = $argv;
$binary = $mode === 'binary';
$a = client($writer, $binary);
$b = client($reader, $binary);
$k = "{$p}k";
$missing = "{$p}missing";

check('set', $a->set($k, 'v1'), true);
check('get', $b->get($k), 'v1');
check('get missing', $b->get($missing), false);
check('get missing says not found', $b->getResultCode(), Memcached::RES_NOTFOUND);

$a->set("{$p}m1", 'one');
$a->set("{$p}m2", 'two');
$many = $b->getMulti(["{$p}m1", "{$p}m2", $missing]);
ksort($many);
check('multi-get', $many, ["{$p}m1" => 'one', "{$p}m2" => 'two']);

check('add present', $a->add($k, 'x'), false);
check('add absent', $a->add("{$p}new", 'n'), true);
check('get added', $b->get("{$p}new"), 'n');
check('replace absent', $a->replace($missing, 'x'), false);
check('replace present', $a->replace($k, 'v2'), true);
check('append', $a->append($k, '-tail'), true);
check('prepend', $a->prepend($k, 'head-'), true);
check('append absent', $a->append($missing, 'x'), false);
check('get after append and prepend', $b->get($k), 'head-v2-tail');

$a->set("{$p}n", '10');
check('incr', $a->increment("{$p}n", 5), 15);
check('decr below zero', $b->decrement("{$p}n", 20), 0);
// memcached pads a shrunk counter with spaces; both are fine.
check('get counter', rtrim($b->get("{$p}n"), ' '), '0');
check('incr absent', $a->increment($missing, 1), false);

check('touch present', $a->touch($k, 100), true);
check('touch absent', $a->touch($missing, 100), false);

check('delete present', $a->delete("{$p}new"), true);
check('get deleted', $b->get("{$p}new"), false);
check('delete absent', $a->delete("{$p}new"), false);

[$value, $token] = gets($a, $k);
check('gets value', $value, 'head-v2-tail');
if (!is_int($token) || $token <= 0 || $token >= TOKEN_LIMIT) {
    fail('gets token ' . var_export($token, true) . ' is not in (0, 2^32)');
}
check('cas with the fresh token', $b->cas($token, $k, 'swapped'), true);
check('cas with the stale token', $a->cas($token, $k, 'again'), false);
check('stale cas says exists', $a->getResultCode(), Memcached::RES_DATA_EXISTS);
check('get after cas', $b->get($k), 'swapped');
[$value, $fresh] = gets($b, $k);
check('gets after cas', $value, 'swapped');
if ($fresh === $token) {
    fail('the token did not change with the value');
}
check('cas with the new token', $a->cas($fresh, $k, 'again'), true);

$a->set("{$p}alike1", 'same');
$a->set("{$p}alike2", 'same');
if (gets($a, "{$p}alike1")[1] === gets($a, "{$p}alike2")[1]) {
    fail('two keys written alike share a token');
}
echo "ok php-memcached-$mode\n";
