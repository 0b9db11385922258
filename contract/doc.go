// Package contract owns Vigil's wire and storage contracts, in one place
// that every stage imports and that imports no other package of Vigil:
//
//   - Reading: an accepted reading as the raw topic carries it, with its
//     encoder and its strict decoder;
//   - Device and Gateway: the public view of the registry, without key
//     hashes;
//   - Enriched: the enriched record, with its one encoder and one decoder
//     (the pipeline writes it; the archive, the console and the status
//     page read it), the names of the derived figures, and the header
//     that names the raw record it was made from;
//   - Alert and Reason, with their encoding;
//   - ArchiveKey: the name of an archive object, with Format and Parse;
//   - the bucket layout: the keys under models/, leases/, labels/,
//     notebooks/ and sites/, built here and nowhere else.
//
// These names are the public surface (see the README's "Contracts"); change
// one only with a reason written there.
package contract
