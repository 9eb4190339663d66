macro_rules! test_roundtrip {
    ($t:ty, $name:ident) => {
        #[allow(unused_imports)]
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig{fork: false, ..Default::default()})]
            #[test]
            fn $name(orig: $t) {
                #[allow(unused_imports)]
                use std::io::Cursor;

                // A `Vec`, not a `Cursor`: some types are written only into a `Vec<u8>`.
                let mut buf = Vec::<u8>::new();
                match orig.write(&mut buf) {
                    Err(_) => {
                        // skip
                    }
                    Ok(()) => {
                        let l = buf.len() as u64;
                        let mut buf = Cursor::new(buf);

                        let restored = <$t>::read(&mut buf).unwrap();
                        assert_eq!(orig, restored);

                        assert_eq!(buf.position(), l);
                    }
                }
            }
        }
    };
}

pub(crate) use test_roundtrip;
